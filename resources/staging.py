"""The local working area: courier manifests, downloaded files and produced outputs."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field


class StagingResource(dg.ConfigurableResource):
    """A folder every step of a run can reach (share it between machines when scaling out)."""

    data_dir: str = Field(description="Root of Stagecoach's working files.")

    def folder(self, *parts: str) -> Path:
        path = Path(self.data_dir, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, path: Path, payload: Any) -> None:
        """Write atomically, so a reader sees the old manifest or the new one, never half."""
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        os.replace(partial, path)

    @staticmethod
    def read_json(path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))
