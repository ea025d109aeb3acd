"""A job written with longrun.job, for the tests: counts steps, one checkpoint per step.

Input: {"steps": n, "sleep": seconds per step, "failAt": k (attempt 1 exits 3 after step
k), "failAlways": k (every attempt exits 3 once k steps are done in all)}.
Output: {"done", "resumedFrom", "attempt"}; and the artifact note.txt.
"""

import sys
import time

from longrun import job

inp = job.input
steps = int(inp.get("steps", 5))
state = job.load_checkpoint(default={"done": 0})
resumed_from = state["done"]
print(f"steps: attempt {job.attempt} of {job.request_id} starts at {resumed_from}")
while state["done"] < steps:
    if job.stop_requested():
        job.exit_stopped(checkpoint=state, message=f"steps: SIGTERM at {state['done']}")
    time.sleep(float(inp.get("sleep", 0.02)))
    state = {"done": state["done"] + 1}
    job.progress(state["done"], steps, f"step {state['done']}", checkpoint=state)
    print(f"steps: step {state['done']}/{steps}")
    if state["done"] == inp.get("failAt") and job.attempt == 1:
        sys.exit(3)
    if state["done"] >= inp.get("failAlways", steps + 1):
        sys.exit(3)
(job.output_dir / "note.txt").write_text(f"{state['done']} steps\n")
job.write_result({"done": state["done"], "resumedFrom": resumed_from, "attempt": job.attempt})
print("steps: done")
