"""The learning load balancer (policies/mllb) from user space: its decision-tree
model (model.py: quantisation, validation, the model file) and training from
traces (train.py)."""
