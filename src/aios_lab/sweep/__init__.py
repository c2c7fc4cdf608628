"""Experiment sweeps: a grid of cells, planned once, run idempotently on an executor.

spec      the TOML spec, cells and their content hashes, the recorded order
cells/    the cell kinds (registered types): vm-bench, dvfs-sim, dvfs-train
layout    the sweep folder: parameter-keyed cell folders, atomic publication
worker    runs one cell into a folder (on whatever machine the executor chose)
executors local process pool, Ray (registered types)
runner    the driver: skip finished cells, run the rest, retry, publish
status    progress and results of a sweep folder
See docs/sweep.md.
"""
