"""Drivers of the node's public interface: the local API, the CLI, auto-trading."""
