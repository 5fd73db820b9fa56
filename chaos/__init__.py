"""The chaos suite: a Jepsen-style bank workload against real processes under faults.

`wallet chaos` (runner.py) and tests/chaos/ drive it; checker.py decides whether the
run kept the bank invariant. naive.py is a deliberately broken transfer used only to
show that the checker can fail.
"""
