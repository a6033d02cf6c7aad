"""Latency sources: measured (host TFLite, real Edge TPU) and predicted.

This package never imports ``nas`` or Ray; optional runtimes are imported only when the
source that needs them is used.
"""
