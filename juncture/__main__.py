from juncture.cli import app

app()
