function cb(tag, ts, record)
    record.x = record.missing.field
    return 1, ts, record
end
