"""Data: readers for every on-disk format -> numpy, sources and cache, splits and batch order."""
