"""What the deployed stacks and the running functions must agree on, importable without any
of the runtime's dependencies (pydantic only): every tunable setting declared once
(`settings`), the AWS service limits those settings are bounded by (`aws_limits`), and the
names a resource and the code that uses it share (`names`). Synth imports nothing else of the
runtime (tests/unit/test_stacks_imports.py holds it to that)."""
