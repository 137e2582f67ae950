from svdcli.cli.main import app

app()
