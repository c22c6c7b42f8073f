"""What the tests and the benchmarks share: a real server in a subprocess, the fake Telegram and
Discord APIs, the photo makers and the robustness set, and the statistics they print. Imported as
a package by both (no `sys.path` editing); it is test equipment, never imported by the product."""
