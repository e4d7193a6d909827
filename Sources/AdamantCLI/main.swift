import Adamant
AdamantCommand.main()
