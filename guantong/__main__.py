from guantong.cli import main

main()
