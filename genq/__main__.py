from genq.cli import app

app(prog_name="genq")
