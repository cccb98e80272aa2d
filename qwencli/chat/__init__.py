"""`qwen chat`: the session (session.py), the terminal (terminal.py), the engine (engine.py)
and which model runs (select.py)."""
