"""Tests of the train/ command lines."""
