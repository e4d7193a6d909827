import ArgumentParser
import Adamant

struct AdamantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "adamant", abstract: "adamant")
}
