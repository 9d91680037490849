from flashgate.operator.main import main

main()
