"""Committed weights of the zoo models trained in this repo (data files; see scripts/)."""
