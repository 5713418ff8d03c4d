function cb(tag, ts, record)
    record.lua_array = {}
    record.lua_array2 = {1, 2, 3}
    record.lua_array3 = {a = 1}
    record.not_forced = {}
    return 1, ts, record
end
