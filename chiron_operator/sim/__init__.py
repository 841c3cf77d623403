"""Discrete-event simulator of a vLLM cluster that drives the shipped controllers."""
