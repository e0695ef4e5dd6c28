"""A terminal's live rendering of progress events (lab.Event): each phase a line with a
spinner while it runs, its nodes ready out of total, and its elapsed time; notes print
above. The display runs only while a phase does, so whatever a command prints after
its phases (a status table, an error line) is plain output below it."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from labctl.lab import Event


class Seconds(ProgressColumn):
    """Elapsed time as the plain lines say it ("1.4 s"), frozen when the phase ends."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{elapsed or 0.0:.1f} s", style="progress.elapsed")


class LiveProgress:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/green]"),
            TextColumn("{task.description}"),
            TextColumn("[cyan]{task.fields[count]}"),
            Seconds(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.counts: dict[str, str] = {}  # a phase's count may come before it starts
        self.lock = threading.Lock()

    def __call__(self, e: Event) -> None:
        with self.lock:
            if e.kind == "start":
                if not self.tasks:
                    self.progress.start()
                count = self.counts.get(e.phase, "")
                self.tasks[e.phase] = self.progress.add_task(
                    escape(e.phase), total=None, count=count
                )
            elif e.kind in ("done", "failed"):
                task = self.tasks.pop(e.phase, None)
                if task is not None:
                    if e.kind == "done":
                        self.progress.update(task, total=1, completed=1)
                    else:
                        self.progress.update(task, description=f"[red]{escape(e.phase)} failed")
                    self.progress.stop_task(task)
                if not self.tasks:
                    self.progress.stop()
            elif e.kind == "count":
                done = f"{e.done}/{e.total}" if e.total else str(e.done)
                self.counts[e.phase] = f"{done} {e.unit}"
                if e.phase in self.tasks:
                    self.progress.update(self.tasks[e.phase], count=self.counts[e.phase])
            elif e.kind == "note":
                self.progress.console.print(f"[dim]·[/dim] {escape(e.text)}", highlight=False)
