from hopcast.cli import main

main()
