function cb(tag, ts, record)
    record.made = {inner = {deep = {1, 2, {x = "y"}}}, list = {"a", "b"}}
    record.sparse = {[1] = "a", [3] = "c"}
    record.mixed = {1, 2, k = "dropped"}
    record.holes_end = {1, nil, nil}
    record.empty_map = {}
    if record.nested then
        record.nested.m.added = true
        table.insert(record.nested.b, "pushed")
        record.nested.a = nil
    end
    if record.tags then
        record.tags[3] = "r"
        record.count = #record.tags
    end
    return 2, ts, record
end
