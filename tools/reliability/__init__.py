"""Reliability suite (`make reliability`, `python -m tools.reliability`): the service under abuse, on 127.0.0.1.

Every scenario starts its own `diffres serve` on a free port, bounds its traffic in count and
time, and stops the server however it ends. Results go to reports/RELIABILITY.md and
reports/reliability.json.
"""
