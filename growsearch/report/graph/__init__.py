"""Pictures of module graphs: what is drawn (`picture`), where (`layout`), how (`render`: DOT through
Graphviz, or `mpl`: matplotlib), exports (`export`: GraphML, node-link JSON) and diffs (`diff`)."""
