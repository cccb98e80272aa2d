"""How long a test may wait for an event before it fails: ceilings, never expected durations.

A test that races a process (a signal mid-download, a key typed into a terminal) waits for an
event: an output marker, a hook in the test Hub. These numbers only bound how long it waits when
the event never comes, so a bug fails the test instead of hanging the suite. They are far above
anything a busy machine needs, so that a slow run is never mistaken for a failure; nothing
passes or fails because they are large or small.
"""

from __future__ import annotations

PROCESS_S = 300  # a `qwen` process: start, load a model, answer, exit
HTTP_S = 600  # an HTTP read in a test process (HF_HUB_DOWNLOAD_TIMEOUT): beyond any pause
PAUSE_S = 900  # a fake-Hub transfer held at `pause_at`, before it is reported as never released
