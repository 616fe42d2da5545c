"""Testing the user's kernel (`scons test` with a project's [test] table): the table (table.py),
one boot and its verdict (runner.py), and what is reported (results.py: a line per boot, a
summary, JUnit XML)."""
