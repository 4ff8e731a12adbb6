"""stateengine's benchmark suite (not installed): ``python -m bench`` from the repo root.

README "Benchmarks" lists the commands; ``bench/suite.py`` is the runner.
"""
