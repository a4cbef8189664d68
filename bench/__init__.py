"""certq's benchmark scripts (results in bench/README.md). Run each as a file: `.venv/bin/python bench/<script>.py`;
what they share is in bench/common.py."""
