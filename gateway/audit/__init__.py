"""Audit evidence: the tamper-evident chain, replay, explanations, reports, what-if, fairness.

Everything here reads the gateway's database; only `chain` writes (its own entries, in the
transaction of the row they cover), and the `audit` commands never change a record.
"""
