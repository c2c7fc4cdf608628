"""Offline analysis of traces: metrics over Parquet with duckdb, reports, comparisons, export."""
