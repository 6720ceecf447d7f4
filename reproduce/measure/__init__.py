"""Measuring speed: inference latency of exports (`reproduce speed`), the training-step bench
(`reproduce bench`), and the GPU window's scripts (gpu/)."""
