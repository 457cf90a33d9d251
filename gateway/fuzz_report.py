"""The fuzz run's result: the daemon's log read back, the verdict, the readable table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

SESSION_REJECT_REASONS = {
    "0": "Invalid tag number", "1": "Required tag missing",
    "2": "Tag not defined for this message type", "3": "Undefined tag",
    "4": "Tag specified without a value", "5": "Value is incorrect (out of range)",
    "6": "Incorrect data format for value", "9": "CompID problem",
    "10": "SendingTime accuracy problem", "11": "Invalid MsgType",
    "13": "Tag appears more than once", "14": "Tag specified out of required order",
    "15": "Repeating group fields out of order", "16": "Incorrect NumInGroup count",
    "17": "Non-data value includes field delimiter", "99": "Other",
}
BUSINESS_REJECT_REASONS = {
    "0": "Other", "1": "Unknown ID", "2": "Unknown Security", "3": "Unsupported Message Type",
    "4": "Application not available", "5": "Conditionally required field missing",
}



def daemon_log_summary(path: Path) -> dict[str, Any]:
    """Error-level events in the daemon's JSON log, and the exceptions it logged."""
    errors: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    threads: list[str] = []
    for line in lines:
        if line.startswith("Exception in thread"):
            # threading's excepthook: an exception ended one of the daemon's threads.
            threads.append(line.removeprefix("Exception in thread").strip(" :"))
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
            continue
        errors[str(entry.get("event"))] += 1
        trace = str(entry.get("exception") or "").strip().splitlines()
        if trace:
            last = next((ln for ln in reversed(trace) if not ln.startswith("(Background")),
                        trace[-1])
            exceptions[f"{entry.get('event')}: {last.strip()[:160]}"] += 1
    return {"daemon_errors": dict(errors.most_common()),
            "daemon_exceptions": dict(exceptions.most_common(10)), "threads_died": threads}


def assemble(result: dict[str, Any], per_peer: dict[str, dict[str, Any]],
             byte_values: set[int], *, normal: dict[str, Any], crash: dict[str, Any] | None,
             hang: dict[str, Any] | None, rss_peak: float, evidence: list[str],
             exit_code: int | None, seconds: float) -> dict[str, Any]:
    """The run's result: what was measured along the way plus the peers' counters."""
    rejects: Counter[str] = Counter()
    business: Counter[str] = Counter()
    mutations: Counter[str] = Counter()
    templates: Counter[str] = Counter()
    logout_texts: Counter[str] = Counter()
    for stats in per_peer.values():
        rejects.update(stats["session_rejects"])
        business.update(stats["business_rejects"])
        mutations.update(stats["by_mutation"])
        templates.update({f"{name}": n for name, n in stats["by_template"].items()})
        logout_texts.update(stats["logout_texts"])
    result.update({
        "messages_sent": sum(s["messages_sent"] for s in per_peer.values()),
        "messages_sent_per_peer": {k: s["messages_sent"] for k, s in per_peer.items()},
        "messages_by_mutation": dict(mutations.most_common()),
        "messages_by_template": dict(templates.most_common()),
        "byte_values_covered": len(byte_values),
        "crashes": 1 if crash else 0,
        "crash": crash,
        "hang": hang,
        "daemon_exit_code": exit_code,
        "rejects_by_reason": dict(rejects.most_common()),
        "business_rejects_by_reason": dict(business.most_common()),
        "er_rejected": sum(s["er_rejected"] for s in per_peer.values()),
        "dont_know": sum(s["dont_know"] for s in per_peer.values()),
        "logouts": {"count": sum(s["logouts"] for s in per_peer.values()),
                    "texts": dict(logout_texts.most_common(6))},
        "disconnects": sum(s["disconnects"] for s in per_peer.values()),
        "stalls": sum(s["stalls"] for s in per_peer.values()),
        "peers": per_peer,
        "rss_mb_peak": rss_peak or None,
        "normal_order": normal,
        "normal_order_allocated": bool(normal.get("allocated")),
        "evidence": evidence,
        "seconds": round(seconds, 1),
    })
    for key in ("rss_mb_before", "rss_mb_after_fuzz", "rss_mb_after"):
        result.setdefault(key, None)
    return result


def passed(result: dict[str, Any]) -> bool:
    return (result["crashes"] == 0 and result["normal_order_allocated"]
            and not result.get("hang") and not result.get("threads_died"))


def format_report(r: dict[str, Any]) -> str:
    def row(label: str, value: object) -> str:
        return f"  {label:<28} {value}"

    def counts(title: str, items: dict[str, int], names: dict[str, str] | None = None
               ) -> list[str]:
        lines = [f"  {title}"]
        for key, n in items.items():
            name = f" {names[key]}" if names and key in names else ""
            lines.append(f"    {n:>9,}  {key}{name}")
        return lines if items else [f"  {title}: none"]

    peers = r["peers"]
    out = ["", "Fuzz summary",
           row("seed", r["seed"]),
           row("messages sent", f"{r['messages_sent']:,} ("
               + ", ".join(f"{k} {v:,}" for k, v in r["messages_sent_per_peer"].items()) + ")"),
           row("byte values in mutations", f"{r['byte_values_covered']} of 256"),
           row("crashes", f"{r['crashes']}" + (f"  {r['crash']}" if r["crash"] else "")),
           row("daemon exit code", r["daemon_exit_code"]),
           row("hang", r["hang"] or "none"),
           row("daemon threads that died", ", ".join(r.get("threads_died") or []) or "none"),
           row("stalled sessions", r["stalls"]),
           row("RSS MB before/after", f"{r['rss_mb_before']} -> {r['rss_mb_after_fuzz']} "
               f"(after fuzz) -> {r['rss_mb_after']} (after normal order); "
               f"peak {r['rss_mb_peak']}"),
           row("dispatcher inbox after fuzz",
               f"{r['inbox_depth_after_fuzz']:,} events, drained in {r['drain_seconds']} s"
               if r.get("inbox_depth_after_fuzz") is not None else "not read"),
           row("ER 39=8 received", f"{r['er_rejected']:,}"),
           row("DontKnowTrade (Q) received", f"{r['dont_know']:,}"),
           row("Logouts from the gateway", f"{r['logouts']['count']:,}"),
           row("disconnects by the gateway", f"{r['disconnects']:,}")]
    out += [f"    {n:>9,}  {text!r}" for text, n in r["logouts"]["texts"].items()]
    out += counts("session Rejects (35=3) by SessionRejectReason(373)",
                  r["rejects_by_reason"], SESSION_REJECT_REASONS)
    out += counts("BusinessMessageRejects (35=j) by BusinessRejectReason(380)",
                  r["business_rejects_by_reason"], BUSINESS_REJECT_REASONS)
    out += counts("error events in the daemon's log", r["daemon_errors"])
    out += counts("exceptions in the daemon's log", r["daemon_exceptions"])
    out += counts("messages by mutation", r["messages_by_mutation"])
    out += counts("messages by template", r["messages_by_template"])
    for name, s in peers.items():
        out.append(f"  peer {name}: {s['messages_sent']:,} sent in {s['seconds']} s, frames parsed "
                   f"{s['frames_parsed']:,} / garbled {s['frames_garbled']:,}, logons "
                   f"{s['logons']}, gap fills {s['gap_fills_sent']}, fillers {s['fillers']}, "
                   f"received {sum(s['received'].values()):,} "
                   f"({', '.join(f'{k}:{v}' for k, v in sorted(s['received'].items()))})")
    n = r["normal_order"]
    out.append(row("normal order", f"{n.get('cl_ord_id', '-')} {n.get('qty', '')}: "
                   + ("allocated " + f"{n['allocated_qty']} = filled {n['filled']} over "
                      f"{n['accounts']} accounts ({n['alloc_id']})" if n.get("allocated")
                      else f"NOT allocated ({n.get('error') or n})")))
    for path in r["evidence"]:
        out.append(row("evidence", path))
    if r.get("error"):
        out.append(row("error", r["error"]))
    out.append(row("state dir", r["state_dir"]))
    out.append(row("seconds", f"{r['seconds']} (fuzz {r.get('fuzz_seconds')})"))
    out.append(row("result", "PASS" if passed(r) else "FAIL"))
    return "\n".join(out)
