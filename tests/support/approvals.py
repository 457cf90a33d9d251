"""The approval policy the gateway and page tests hold their blocks with."""

from __future__ import annotations

FOUR_EYES = """
approval_policies:
  - id: FOUR-EYES-ALL
    version: "1"
    description: Every computed split is approved by two PMs
    when: "!decision.manual"
    approvers: {role: pm, count: 2}
"""
