import DgrunGraph
import FoundationEssentials
import FuzzSupport

// A recorded graph read back (`dgrun graph`): decoded as StateVerbs does, rendered in every
// format, and the JSON rendering must decode again to the same nodes and edges.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = FuzzInput(data, size)
    guard let graph = try? JSONDecoder().decode(Graph.self, from: Data(input.bytes)) else { return 0 }
    for format in GraphFormat.allCases {
        guard let text = try? GraphRenderer.render(graph, as: format) else { continue }
        if format == .json {
            guard let again = try? JSONDecoder().decode(Graph.self, from: Data(text.utf8)) else {
                fatalError("the graph's own JSON does not decode:\n\(text)")
            }
            precondition(again.nodes == graph.nodes && again.edges == graph.edges, "the JSON round trip changed the graph")
        }
    }
    return 0
}

runFuzzer(fuzz)
