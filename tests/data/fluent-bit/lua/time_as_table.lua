function cb(tag, ts, record)
    record.sec = ts.sec
    record.nsec = ts.nsec
    if record.k == "a" then
        return 1, {sec = ts.sec + 10, nsec = 42}, record
    elseif record.k == "b" then
        return 2, {sec = 0, nsec = 0}, record
    end
    return 1, ts, record
end
