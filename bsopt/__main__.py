from bsopt._cli import console_main

console_main()
