"""Prometheus text exposition for the control plane (no client library needed for a dozen
series), served with Envoy's own stats on the loopback operator port."""

from __future__ import annotations

from dataclasses import dataclass, field


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class MetricFamily:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> MetricFamily:
        self.samples.append((labels, float(value)))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            shown = str(int(value)) if value.is_integer() else repr(value)
            lines.append(f"{self.name}{{{label_text}}} {shown}" if label_text else f"{self.name} {shown}")
        return "\n".join(lines)


def render(families: list[MetricFamily]) -> str:
    return "\n".join(f.render() for f in families) + "\n"
