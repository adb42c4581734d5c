from hopcast._cli import main

main()
