"""Scaling studies: sweep expansion and runner, law fitting, plots."""
