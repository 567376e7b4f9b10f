from xentool.cli.main import main

main()
