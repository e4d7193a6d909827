import ArgumentParser
import Adamant
import Foundation

/// The exit statuses of `adamant`: one per kind of failure (sysexits.h numbers where one fits).
/// Documented in `adamant --help` and the README; keep the three in step.
enum Exit: Int32 {
    /// Success.
    case ok = 0
    /// The work itself failed: a resource limit, a computation that went wrong, a bench child that died.
    case failure = 1
    /// EX_USAGE: unknown option, missing or bad option value, options that do not go together.
    case usage = 64
    /// EX_DATAERR: a model, image or dataset that exists but is malformed, unsupported or does not fit.
    case data = 65
    /// EX_NOINPUT: a model, image or dataset that does not exist or cannot be opened.
    case noInput = 66
    /// EX_SOFTWARE: an internal error (a bug in adamant).
    case software = 70
    /// EX_CANTCREAT: an output file or directory cannot be created or written.
    case cantCreate = 73

    static let table = """
    Exit status:
      0   success
      1   the work failed (resource limit, failed computation, bench child died)
      64  usage: unknown option or bad option value (the message names it)
      65  bad data: a model, image or dataset that is malformed or does not fit
      66  missing input: a model, image or dataset that cannot be opened
      70  internal error (a bug in adamant: please report it)
      73  cannot create an output (-o, --json, --csv, --cache-dir)
    """
}

/// A failure with its exit status and a message for a person.
struct CLIError: Error, CustomStringConvertible {
    let exit: Exit
    let message: String
    init(_ exit: Exit, _ message: String) { self.exit = exit; self.message = message }
    var description: String { message }

    static func usage(_ m: String) -> CLIError { CLIError(.usage, m) }
}

/// strerror(errno) as a String.
func errnoText(_ e: Int32 = errno) -> String { String(cString: strerror(e)) }

/// The exit status and message of an error thrown while a command runs.
func classify(_ error: Error) -> (Exit, String) {
    switch error {
    case let e as CLIError: return (e.exit, e.message)
    case let e as ValidationError: return (.usage, e.message)
    case let e as AdamantError:
        switch e.kind {
        case .invalidArgument: return (.usage, e.message)
        case .io: return (.noInput, e.message)
        case .parse, .unsupported, .shape, .domain: return (.data, e.message)
        case .internal: return (.software, e.message)
        case .resource, .cancelled: return (.failure, e.message)
        }
    default: return (.failure, String(describing: error))
    }
}

extension AdamantCommand {
    /// Parses (usage errors exit 64 with the subcommand's usage, as swift-argument-parser does),
    /// then runs, mapping every failure to one exit status of ``Exit``.
    static func runMain() -> Never {
        var command: ParsableCommand
        do {
            command = try parseAsRoot(expandRayArgument(Array(CommandLine.arguments.dropFirst())))
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
            Foundation.exit(0)
        } catch let error where !(error is CLIError || error is AdamantError || error is ValidationError) {
            exit(withError: error)  // help requests, ExitCode, parser errors: swift-argument-parser's way
        } catch {
            let (code, message) = classify(error)
            let name = type(of: command)._commandName
            var text = "Error: \(message)\n"
            if code == .usage { text += "See 'adamant \(name == "adamant" ? "" : name + " ")--help'.\n" }
            FileHandle.standardError.write(text.data(using: .utf8)!)
            Foundation.exit(code.rawValue)
        }
    }
}

// MARK: Option checks (for validate())

/// Fails unless `value` lies in `range`, naming the option.
func require<T: BinaryInteger>(_ value: T, in range: ClosedRange<T>, _ option: String) throws {
    guard range.contains(value) else {
        throw ValidationError("\(option) must be in [\(range.lowerBound), \(range.upperBound)], got \(value)")
    }
}

/// Fails unless `value` >= `low`, naming the option.
func require<T: BinaryInteger>(_ value: T, atLeast low: T, _ option: String, _ hint: String = "") throws {
    guard value >= low else {
        throw ValidationError("\(option) must be at least \(low)\(hint), got \(value)")
    }
}

/// Parses a number option ("8/255", "0.03") that must be a finite float32 >= the smallest normal
/// float (so that derived step sizes such as eps/4 cannot underflow to zero).
func positiveNumber(_ s: String, _ option: String) throws -> Float {
    let v: Float
    do { v = try parseNumber(s) } catch { throw ValidationError("\(option): '\(s)' is not a number (use e.g. 0.03 or 8/255)") }
    guard v.isFinite else { throw ValidationError("\(option) must be a finite number, got '\(s)' (\(v))") }
    guard v > 0 else { throw ValidationError("\(option) must be positive, got '\(s)'") }
    guard v >= 4 * Float.leastNormalMagnitude else {
        throw ValidationError("\(option) = '\(s)' is too small for float32 (below \(4 * Float.leastNormalMagnitude)): steps derived from it would underflow to 0")
    }
    return v
}

/// Parses a comma-separated list of finite numbers, naming the option.
func finiteList(_ s: String, _ option: String) throws -> [Float] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false)
    guard !parts.isEmpty else { throw ValidationError("\(option) needs comma-separated numbers, got '\(s)'") }
    return try parts.map { p in
        guard let v = try? parseNumber(String(p).trimmingCharacters(in: .whitespaces)), v.isFinite else {
            throw ValidationError("\(option): '\(p)' is not a finite number (in '\(s)')")
        }
        return v
    }
}

/// Parses a comma-separated list of integers in `range`, naming the option.
func intList(_ s: String, _ option: String, in range: ClosedRange<Int>) throws -> [Int] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false)
    return try parts.map { p in
        guard let v = Int(p.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(option): '\(p)' is not an integer (in '\(s)')")
        }
        guard range.contains(v) else {
            throw ValidationError("\(option) values must be in [\(range.lowerBound), \(range.upperBound)], got \(v)")
        }
        return v
    }
}

// MARK: Inputs and outputs

/// The exit status for an input path that failed to open or decode: 66 if it is not there, else 65.
func inputError(_ path: String, _ message: String) -> CLIError {
    if access(path, R_OK) != 0 {
        return CLIError(.noInput, "cannot read '\(path)': \(errnoText())")
    }
    return CLIError(.data, message)
}

/// Checks before any work that `path` can be created or overwritten as a file (exit 73 otherwise).
func checkOutputFile(_ path: String, _ option: String) throws {
    var st = stat()
    if stat(path, &st) == 0 {
        if (st.st_mode & S_IFMT) == S_IFDIR { throw CLIError(.cantCreate, "cannot write \(option) '\(path)': it is a directory") }
        if access(path, W_OK) != 0 { throw CLIError(.cantCreate, "cannot write \(option) '\(path)': \(errnoText())") }
        return
    }
    let dir = (path as NSString).deletingLastPathComponent
    let parent = dir.isEmpty ? "." : dir
    if stat(parent, &st) != 0 {
        throw CLIError(.cantCreate, "cannot write \(option) '\(path)': directory '\(parent)': \(errnoText())")
    }
    if (st.st_mode & S_IFMT) != S_IFDIR {
        throw CLIError(.cantCreate, "cannot write \(option) '\(path)': '\(parent)' is not a directory")
    }
    if access(parent, W_OK | X_OK) != 0 {
        throw CLIError(.cantCreate, "cannot write \(option) '\(path)': directory '\(parent)': \(errnoText())")
    }
}

/// Creates directory `path` (and its parents) or fails with exit 73 and the reason.
func makeOutputDirectory(_ path: String, _ option: String) throws {
    var st = stat()
    if stat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CLIError(.cantCreate, "cannot use \(option) '\(path)': it exists and is not a directory") }
        guard access(path, W_OK | X_OK) == 0 else { throw CLIError(.cantCreate, "cannot write into \(option) '\(path)': \(errnoText())") }
        return
    }
    var prefix = path.hasPrefix("/") ? "/" : ""
    for part in path.split(separator: "/") {
        prefix += part
        if stat(prefix, &st) != 0 {
            guard mkdir(prefix, 0o777) == 0 || errno == EEXIST else {
                throw CLIError(.cantCreate, "cannot create \(option) '\(path)': '\(prefix)': \(errnoText())")
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw CLIError(.cantCreate, "cannot create \(option) '\(path)': '\(prefix)' is not a directory")
        }
        prefix += "/"
    }
}

/// Writes bytes to `path` with POSIX calls, so a failure says which path and why (exit 73).
func writeFile(_ bytes: [UInt8], to path: String, _ option: String) throws {
    guard let f = fopen(path, "wb") else { throw CLIError(.cantCreate, "cannot write \(option) '\(path)': \(errnoText())") }
    let n = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
    let writeErr = n == bytes.count ? 0 : errno
    let closed = fclose(f)
    guard writeErr == 0, closed == 0 else {
        throw CLIError(.cantCreate, "cannot write \(option) '\(path)': \(errnoText(writeErr != 0 ? writeErr : errno))")
    }
}

/// Runs a model save (or another library write) and reports a failure as "cannot write" (exit 73).
func writingOutput(_ path: String, _ option: String, _ body: () throws -> Void) throws {
    do { try body() } catch let e as AdamantError where e.kind == .io {
        throw CLIError(.cantCreate, "cannot write \(option) '\(path)': \(e.message)")
    }
}

/// Resolves a domain option ("clean,adv", "all" or indices) to indices; unknown ones are usage errors.
func resolveDomains(_ spec: String?, _ model: Model, option: String) throws -> [Int] {
    do { return try resolveDomains(spec, model) } catch let e as AdamantError where e.kind == .domain {
        throw CLIError.usage("\(option): \(e.message)")
    }
}
