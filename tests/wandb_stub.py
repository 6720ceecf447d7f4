"""The W&B sweep server, stubbed, so that the real `wandb agent` code runs offline.

The agent (wandb/wandb_agent.py) reaches the server through three GraphQL operations, all
sent by `api._service_api.execute_graphql` from wandb/apis/public/sweeps.py:
  SweepWithRuns  the sweep's YAML, for its `command:` template;
  CreateAgent    registers the agent;
  Heartbeat      reports the running runs and returns the commands: {"type": "run" | "resume",
                 "run_id", "program", "args": {name: {"value": v}}} or {"type": "exit"}.
`StubServer` answers exactly these (anything else fails loudly, so a wandb release that adds a
call shows up here) from a JSON file, so that agents in several processes, one after another,
share one sweep, as array tasks share one on a cluster. Everything else in the agent is real:
the macro expansion of the command, the environment (WANDB_RUN_ID, WANDB_SWEEP_ID), the child
process and its signals.

As a script it is the `wandb` command with the stub in place: `python tests/wandb_stub.py agent
--count 1 --forward-signals ENTITY/PROJECT/SWEEP` (state file: $WANDB_STUB_STATE).
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

STATE_ENV = "WANDB_STUB_STATE"
# the agent waits this long on its queue before every heartbeat (5 s in wandb); only shortened
POLL_INTERVAL_S = 0.05


class StubServer:
    """The sweep side of the W&B server: hands out queued runs, one at a time per agent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, sweep_yaml: str, program: str) -> StubServer:
        server = cls(path)
        server._save({"config": sweep_yaml, "program": program, "queue": [], "handed": [], "calls": [],
                      "agents": 0, "errors": []})
        return server

    def state(self) -> dict:
        return json.loads(self.path.read_text())

    def _save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.path)

    def enqueue(self, run_id: str, args: dict, kind: str = "run") -> None:
        """What the controller proposes next; "resume" is how the server hands back a preempted run."""
        state = self.state()
        state["queue"].append({"type": kind, "run_id": run_id, "program": state["program"],
                               "args": {name: {"value": value} for name, value in args.items()}})
        self._save(state)

    def execute_graphql(self, query: str, variables: dict | None = None, **_) -> dict:
        variables = variables or {}
        match = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
        operation = match.group(1) if match else "?"
        state = self.state()
        state["calls"].append({"operation": operation, "variables": variables})
        try:
            if operation == "SweepWithRuns":
                response = {"project": {"sweep": {
                    "id": variables["sweep"], "name": variables["sweep"], "method": "grid", "state": "RUNNING",
                    "description": None, "config": state["config"], "controller": None, "scheduler": None,
                    "runs": {"edges": []}}}}
            elif operation == "CreateAgent":
                state["agents"] += 1
                response = {"createAgent": {"agent": {"id": f"agent-{state['agents']}"}}}
            elif operation == "Heartbeat":
                running = json.loads(variables.get("runState") or "{}")
                commands = []
                if not running and state["queue"]:
                    commands.append(state["queue"].pop(0))
                    state["handed"].append(commands[-1])
                elif not running:
                    commands.append({"type": "exit"})  # the sweep is done: the agent quits
                response = {"agentHeartbeat": {"agent": {"id": variables["id"]}, "commands": json.dumps(commands)}}
            else:
                raise AssertionError(f"the agent sent a GraphQL operation the stub does not know: {operation}")
        except Exception as e:
            # the agent swallows heartbeat errors; keep them for the test to report
            state["errors"].append(f"{operation}: {type(e).__name__}: {e}")
            self._save(state)
            raise
        self._save(state)
        return response


class StubApi:
    """`wandb.Api()` as the agent uses it: settings (entity, project) and the GraphQL transport."""

    def __init__(self, server: StubServer) -> None:
        self.settings = {"entity": os.environ.get("WANDB_ENTITY", "stub-entity"),
                         "project": os.environ.get("WANDB_PROJECT", "stub-project")}
        self._service_api = server


def stub_patches(server: StubServer) -> list[tuple[object, str, object]]:
    """(object, attribute, replacement): the login, the API client, the poll interval."""
    import wandb
    from wandb import wandb_agent
    from wandb.sdk import wandb_login

    return [(wandb, "Api", lambda *a, **k: StubApi(server)),
            (wandb_login, "_login", lambda *a, **k: True),
            (wandb_agent.Agent, "POLL_INTERVAL", POLL_INTERVAL_S)]


# ---------------------------------------------------------------- the agent's child process, forked

class ForkedRun:
    """`subprocess.Popen` for the agent's run command, forked from a server that has the suite imported.

    A fresh `python -m reproduce.train` spends 8 s importing torch and Lightning; forked, a
    shrunk run takes about 1 s. The command is run as `python -m` runs it (runpy, argv, the
    agent's environment and working directory, its own process group); `check` sees it first and
    may refuse it (exit 2, nothing started), so a broken template fails fast instead of training
    the full-size config. Only the process start differs from a cluster: the real exec of
    `/usr/bin/env python -m ...` is what tests/test_wandb_agent.py's SLURM test runs.
    """

    def __init__(self, ctx, check, log_dir: Path, deadline_s: float):
        self.ctx, self.check, self.log_dir, self.deadline_s = ctx, check, Path(log_dir), deadline_s
        self.launched: list[dict] = []  # one entry per command the agent started

    def __call__(self, command, env=None, stdin=None, **kwargs):
        record = {"command": [str(c) for c in command], "run_id": (env or {}).get("WANDB_RUN_ID"),
                  "sweep_id": (env or {}).get("WANDB_SWEEP_ID"), "refused": None, "exitcode": None}
        self.launched.append(record)
        record["refused"] = self.check(record)
        return _ForkedProcess(self.ctx, record, env or {}, self.log_dir, self.deadline_s)


class _ForkedProcess:
    def __init__(self, ctx, record: dict, env: dict, log_dir: Path, deadline_s: float):
        self.record, self.stdin = record, SimpleNamespace(close=lambda: None)
        self.deadline = time.monotonic() + deadline_s
        self.log = log_dir / f"{record['run_id']}.log"
        self.process = None
        if record["refused"]:
            record["exitcode"] = 2
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        self.process = ctx.Process(target=run_command, args=(record["command"], env, os.getcwd(), str(self.log)))
        self.process.start()
        self.pid = self.process.pid

    def poll(self):
        if self.process is None:
            return self.record["exitcode"]
        if self.process.exitcode is None and time.monotonic() > self.deadline:
            self.record["refused"] = "ran past its deadline"
            self.process.kill()
            self.process.join(10)
        self.record["exitcode"] = self.process.exitcode
        return self.process.exitcode

    def wait(self, timeout=None):
        if self.process is not None:
            self.process.join(timeout)
            if self.process.exitcode is None:
                raise subprocess.TimeoutExpired(self.record["command"], timeout)
        return self.poll()

    def send_signal(self, signum):
        if self.process is not None and self.process.exitcode is None:
            os.kill(self.process.pid, signum)

    def terminate(self):
        if self.process is not None and self.process.exitcode is None:
            self.process.terminate()

    def kill(self):
        if self.process is not None and self.process.exitcode is None:
            self.process.kill()


def run_command(command: list[str], env: dict, cwd: str, log: str) -> None:
    """In the forked child: what `/usr/bin/env python -m PROGRAM ARGS` would do."""
    if command[:3] != ["/usr/bin/env", "python", "-m"] or len(command) < 4:
        raise SystemExit(f"not a `python -m` command: {command}")
    os.setpgid(0, 0)  # as the agent's process_group=0
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [command[3], *command[4:]]
    runpy.run_module(command[3], run_name="__main__", alter_sys=True)


def main() -> None:
    """The `wandb` command line, with the stub server in place of W&B's."""
    server = StubServer(os.environ[STATE_ENV])
    for obj, name, value in stub_patches(server):
        setattr(obj, name, value)
    from wandb.cli.cli import cli

    cli(prog_name="wandb")


if __name__ == "__main__":
    main()
