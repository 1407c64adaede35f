def test_probe(sshd_server):
    print(sshd_server)
    print(sshd_server.timings)
    print(sshd_server.run("whoami; env | sort; id; pwd", check=True).stdout)
    print(sshd_server.processes(), sshd_server.processes(all_sessions=True))
