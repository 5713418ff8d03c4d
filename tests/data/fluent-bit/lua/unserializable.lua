function cb(tag, ts, record)
    record.f = print
    return 1, ts, record
end
