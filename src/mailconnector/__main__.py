from mailconnector.cli import main

main()
