from proofmarket.cli import main

main()
