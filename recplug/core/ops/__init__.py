"""Numerical building blocks: sparse propagation, kNN graphs and file writes."""
