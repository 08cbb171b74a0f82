"""docs/reliability.md: fault scenarios, fuzzing counts and security checks in one report,
with docs/reliability/report.json and outcomes.png beside it (`distree bench reliability`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from distree_mqtt.bench.reliability import SCENARIOS, ReliabilityOptions
from distree_mqtt.client.ledger import OUTCOMES

SECURITY_TESTS = "tests/integration/test_security.py"
COLOURS = {"result": "tab:green", "degraded": "tab:orange", "timeout": "tab:purple", "rejected": "tab:red"}


def run_security_checks(timeout_s: float = 900.0) -> dict[str, Any]:
    """Run the security tests against real Mosquitto; each test case and its verdict."""
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "security.xml"
        command = [sys.executable, "-m", "pytest", "-q", SECURITY_TESTS, "-p", "no:cacheprovider"]
        completed = subprocess.run(
            [*command, f"--junitxml={junit}"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if not junit.exists():
            tail = (completed.stdout + completed.stderr).strip().splitlines()[-3:]
            return {"command": _shown(command), "checks": [], "error": " / ".join(tail)}
        checks = []
        for case in ElementTree.parse(junit).iter("testcase"):
            verdicts = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            checks.append({"name": case.get("name", ""), "outcome": verdicts[0] if verdicts else "passed"})
    return {"command": _shown(command), "checks": checks}


def _shown(command: list[str]) -> str:
    return " ".join(["python", *command[1:]])


def fuzz_rows(fuzz: dict[str, Any] | None) -> list[str]:
    if not fuzz:
        return ["No fuzzing campaign in this run (`distree bench reliability --fuzz short|long`)."]
    lines = [
        "| topic | inputs tried | promised outcomes | entries on `errors` expected / seen |",
        "|---|---:|---|---:|",
    ]
    for topic, row in fuzz["topics"].items():
        expected = ", ".join(f"{kind} {count}" for kind, count in row.get("expected", {}).items() if count)
        lines.append(
            f"| `{topic}` | {row['inputs']} | {expected} | {row['error_entries_expected']} / {row['error_entries_seen']} |"
        )
    totals = fuzz.get("totals", {})
    valid = fuzz.get("valid_traffic", {})
    lines += [
        "",
        f"Inputs tried: {totals.get('inputs')}; **crashes: {fuzz.get('crashes')}**; valid requests meanwhile "
        f"{valid.get('correct')}/{valid.get('sent')} correct; RSS bounded: {fuzz.get('rss', {}).get('bounded')}; "
        f"topics outside the documented forms: {len(fuzz.get('topic_violations', []))}.",
    ]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    options = report["options"]
    lines = [
        "# Reliability report",
        "",
        "Regenerate: `distree bench reliability` (fault scenarios, the fuzzing campaign and the security "
        "checks; about ten minutes). The fault scenarios also run, shorter, as "
        "`tests/integration/test_faults.py`. Terminal outcomes and how the protocol keeps every request to "
        'exactly one of them: docs/protocol.md, "Terminal outcomes".',
        "",
        f"Generated {report['generated']}. Real Mosquitto (persistence on) and real device and orchestrator "
        "processes on one machine: stage 0, two replicas of stage 1 in one shared-subscription group, stage 2, "
        f"the orchestrator in static mode with thresholds 0.999 (most requests cross every stage); every device "
        f"at {options['slowdown']:g}x its stage time, keepalive {options['keepalive_s']} s. One client per "
        f"scenario sends {options['rate']:g} requests/s for {options['before_s']:g} s before the fault and "
        f"{options['after_s']:g} s from it, deadline {options['deadline_ms']:g} ms, grace {options['grace_ms']:g} ms; "
        "the counts are from its ledger after every request settled.",
        "",
        "## Fault scenarios",
        "",
        "| scenario | fault | requests | result | degraded | timeout | rejected | lost | duplicates | degraded share | recovery (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["scenarios"]:
        outcomes = row["outcomes"]
        recovery = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
        lines.append(
            f"| {row['name']} | {row['fault']} | {row['sent']} | "
            + " | ".join(str(outcomes[kind]) for kind in OUTCOMES)
            + f" | **{row['lost']}** | **{row['duplicates']}** | {100 * row['degraded_share']:.1f}% | {recovery} |"
        )
    lines += [
        "",
        "Recovery: from the fault to the first second of requests answered with a full `result` at 95% or "
        "more (`-`: the scenario has no such moment, e.g. the overload, which lasts the whole run).",
        "",
        "Details per scenario (seconds; RSS in MiB):",
        "",
    ]
    for row in report["scenarios"]:
        details = ", ".join(f"{key} {value}" for key, value in row["details"].items())
        lines.append(f"- **{row['name']}**: {details}")
    lines += [
        "",
        "![outcomes per second of sending, per scenario](reliability/outcomes.png)",
        "",
        "What happens in each:",
        "",
        "- *kill-replica*: the inputs the killed replica held unacknowledged stay in its persistent session "
        "and are redelivered when it restarts; requests that wait too long meanwhile are answered from "
        "stage 0's progress (degraded).",
        "- *kill-last-stage*: its Last Will marks it offline at once, so stage 1 answers degraded "
        "(`next-stage-offline`) until it is back; inputs it had taken come back to it after the restart "
        "and are answered late with their best prediction, or dropped as expired where the client has "
        "settled them from progress.",
        "- *kill-first-stage*: nothing else can answer a stage-0 input, so the inputs wait in its "
        "persistent session and are answered when it is back (the grace covers a restart). They arrive "
        "as one burst: what exceeds the queue is rejected (`overloaded: stage queue full`), and those "
        "already past their deadline while the queue is half full are answered `timeout` at once.",
        "- *freeze-stage*: SIGSTOP keeps the TCP connection open, so the broker notices only by the "
        "keepalive (1.5 x keepalive, checked every few seconds); until then requests queue for the frozen "
        "device and settle from progress; after SIGCONT it reconnects, gets its session back and drops "
        "what the client has settled.",
        "- *broker-restart*: sessions, retained messages and queued QoS 1 messages survive in Mosquitto's "
        "persistence file; shared subscriptions do not (Mosquitto 2.0), so the client resends the requests "
        "nobody reported on after it reconnects, and devices drop copies they handled.",
        "- *orchestrator-restart*: devices keep the retained policy; the new orchestrator continues its "
        "version number (details: policy versions before and after).",
        "- *overload*: the broker hands the device at most 2 x queue + batch unacknowledged inputs; what "
        "exceeds its queue is rejected at once (`overloaded: stage queue full`), and late queued requests "
        "are answered as `timeout` without running the stage, so memory stays flat.",
        "",
        "## Fuzzing",
        "",
        "From `distree_mqtt.bench.fuzz.run_fuzz_campaign` (details: docs/reliability/fuzz.json and "
        "`distree bench fuzz`).",
        "",
        *fuzz_rows(report.get("fuzz")),
        "",
        "## Security checks",
        "",
    ]
    security = report.get("security")
    if not security:
        lines.append("Not run in this report.")
    else:
        checks = security["checks"]
        passed = sum(check["outcome"] == "passed" for check in checks)
        lines += [
            f"`{security['command']}` against real Mosquitto with TLS, passwords and the ACL of "
            f"configs/mosquitto/: **{passed} of {len(checks)} passed**.",
            "",
        ]
        lines += [f"- {check['outcome']}: `{check['name']}`" for check in checks]
        if security.get("error"):
            lines.append(f"- could not run: {security['error']}")
    return "\n".join(lines) + "\n"


def plot_outcomes(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["scenarios"]
    figure, axes = plt.subplots(len(rows), 1, figsize=(8, 1.9 * len(rows)), sharex=True, squeeze=False)
    for axis, row in zip(axes[:, 0], rows, strict=True):
        timeline = row["timeline"]
        seconds = range(len(next(iter(timeline.values()), [])))
        bottom = [0] * len(seconds)
        for kind in (*OUTCOMES, "lost"):
            values = timeline.get(kind, [0] * len(seconds))
            axis.bar(seconds, values, bottom=bottom, color=COLOURS.get(kind, "black"), label=kind, width=0.9)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if row["name"] in SCENARIOS:
            axis.axvline(report["options"]["before_s"], color="black", linestyle="--", linewidth=1)
        axis.set_ylabel("req/s")
        axis.set_title(row["name"], fontsize=9, loc="left")
    axes[0, 0].legend(ncol=5, fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("second of sending (dashed: the fault)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict[str, Any], markdown_path: Path, out: Path) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    report = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **report}
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    png_path = out / "outcomes.png"
    plot_outcomes(report, png_path)
    markdown_path.write_text(render_markdown(report))
    return markdown_path, json_path, png_path


def default_options(quick: bool) -> ReliabilityOptions:
    return ReliabilityOptions(before_s=2.0, after_s=6.0) if quick else ReliabilityOptions()
