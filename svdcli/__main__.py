from svdcli.cli.main import run

run()
