from normify.cli import main

main()
