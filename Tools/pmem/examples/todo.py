"""A to-do list that survives restarts: an ordinary Python program.

    python -X pmem=todo.pool Tools/pmem/examples/todo.py add "buy milk"
    python -X pmem=todo.pool Tools/pmem/examples/todo.py add "call mum"
    python -X pmem=todo.pool Tools/pmem/examples/todo.py done 1
    python -X pmem=todo.pool Tools/pmem/examples/todo.py list

The program does not import pmem, open a file or save anything: its
tasks are a list in a module global, as in any script.  What keeps them
is ``-X pmem=todo.pool`` (or PYTHONPMEM=todo.pool): the interpreter keeps
__main__'s variables in that pool (created by the first run), so each run
starts with the list that the last one left.  The list and its dicts
live in the pool, and each change to them -- an append, a task marked
done -- is one crash-atomic transaction.

The one thing that such a program does differently is to bind its state
only when the last run left none: ``try: tasks`` / ``except NameError:``.
Everything else is per run, as always: the imported module (argparse)
and the functions are defined anew by each run, and main()'s local variables
(the parsed arguments among them) are no globals, so the pool holds
nothing but ``tasks``.  Without -X pmem the program runs too, and
forgets its tasks when it exits.
"""

import argparse

try:
    tasks                   # the list that the last run left in the pool
except NameError:
    tasks = []              # the first run: [{"text": str, "done": bool}]


def add(text):
    tasks.append({"text": text, "done": False})
    print(f"added task {len(tasks)}: {text}")


def done(number):
    tasks[number - 1]["done"] = True
    print(f"done: {tasks[number - 1]['text']}")


def show():
    if not tasks:
        print("nothing to do")
    for number, task in enumerate(tasks, start=1):
        mark = "x" if task["done"] else " "
        print(f"{number}. [{mark}] {task['text']}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="A to-do list; run it with python -X pmem=todo.pool "
                    "to keep the tasks from run to run.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("add", help="add a task").add_argument("text")
    commands.add_parser("done", help="mark task N done").add_argument(
        "number", type=int, metavar="N")
    commands.add_parser("list", help="show the tasks")
    args = parser.parse_args(argv)
    if args.command == "add":
        add(args.text)
    elif args.command == "done":
        if not 1 <= args.number <= len(tasks):
            parser.error(f"there is no task {args.number} "
                         f"(there are {len(tasks)})")
        done(args.number)
    else:
        show()


if __name__ == "__main__":
    main()
