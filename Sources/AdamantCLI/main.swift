import Adamant
AdamantCommand.runMain()
