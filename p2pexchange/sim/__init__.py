"""Seeded workloads and the multi-replica fault simulation; uses the core only."""
