function cb(tag, ts, record)
    record.was_null = (record.n == flb_null)
    record.added_null = flb_null
    record.list = {1, flb_null, 3}
    return 1, ts, record
end
